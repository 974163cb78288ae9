from segdeploy.commands.app import main

main()
