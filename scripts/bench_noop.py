"""A no-op job in a module that imports nothing: what RQ's own workers run in `make bench`.

RQ's forking Worker imports a job's module in every work horse it forks; `app.jobs.noop`
would bring the whole Flask app with it (about 60 ms a job), so RQ's baselines run this one.
"""


def noop() -> None:
    """Do nothing and return None at once."""
