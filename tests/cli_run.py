"""Running ``bsr`` in the test process: the one helper the CLI tests share."""


def bsr_code(argv) -> int:
    """Exit status of ``bsr ARGV`` run in this process (0 when the command returns without exiting)."""
    from bsrdata.cli.main import main

    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        return 0 if exc.code is None else (exc.code if isinstance(exc.code, int) else 1)
    return 0


def bsr(argv, capsys):
    """``bsr ARGV`` in this process -> (exit status, stdout, stderr), the output read from ``capsys``."""
    code = bsr_code(argv)
    out, err = capsys.readouterr()
    return code, out, err
