from planner_service.bootstrap import main

main()
