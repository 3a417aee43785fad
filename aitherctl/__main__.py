from aitherctl.cli.app import main

main()
