"""The service layer shared by api/ (FastAPI), worker/ (Celery), kdcli's admin commands and migrations/.

settings (KD_ variables), tables (SQLAlchemy models), db (engines, sessions, migrations), jobstore (every
change to a job row), queue (the Celery producer: no app is built at import), security (API keys),
summaries (a job's headline numbers). api/ and worker/ import this package and never each other.
Importing it imports neither torch nor Celery.
"""
