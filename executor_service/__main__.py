from executor_service.server import main

main()
