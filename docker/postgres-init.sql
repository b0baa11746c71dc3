-- Runs once, on an empty data volume: one database per service (each service owns its own),
-- and the gateway's (API keys, audit). Keep `gateway` last: compose's healthcheck waits for it.
CREATE DATABASE students;
CREATE DATABASE status;
CREATE DATABASE certificates;
CREATE DATABASE notifications;
CREATE DATABASE gateway;
