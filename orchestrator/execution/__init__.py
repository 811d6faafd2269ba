"""Running a study: on Ray (study and stage runners, gates, Ray start-up and warm workers, the
trial function, data parallelism, the driver's recorder, live status, Prometheus gauges, tracker
callbacks, resume) or locally (`preflight`). It writes records to storage; the tables made from
them are analysis's."""
