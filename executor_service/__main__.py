from executor_service.bootstrap import main

main()
