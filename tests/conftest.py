pytest_plugins = ["tests.fixtures.dockerengine", "tests.fixtures.gitrepos"]
