"""The service layer shared by api/ (FastAPI), worker/ (Celery), kdcli's admin commands and migrations/.

settings (KD_ variables), tables (SQLAlchemy models), db (engines, sessions, migrations), jobstore (every
change to a job row), queue (the Celery producer: no app is built at import), security (API keys),
summaries (a job's headline numbers), policy and estimate (what a spec sent over HTTP may ask), redact
(no server path in what clients read), archives and budget (uploaded data sets, the disk they may hold).
api/ and worker/ import this package and never each other.
Importing it imports neither torch nor Celery.
"""
