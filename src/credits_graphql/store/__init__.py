"""SQLAlchemy persistence: tables, repositories, unit of work and migrations."""
