from aitherctl.cli.fast_run import main

main()
