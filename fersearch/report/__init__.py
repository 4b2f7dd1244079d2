"""After a search: the best trial, its retrain and evaluation, and every report file."""
