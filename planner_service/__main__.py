from planner_service.server import main

main()
