from bluegreen.app.cli import main

main()
