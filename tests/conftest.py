import os

# No registry is reachable here, and a pull would send a DNS query off this machine:
# every Docker run of the tests (and of the processes they start) must use local images.
os.environ["CONVEYOR_DOCKER_PULL"] = "never"

pytest_plugins = ["tests.fixtures.dockerengine", "tests.fixtures.gitrepos"]
