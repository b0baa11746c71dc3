-- Runs once, on an empty data volume: one database per service (each service owns its own).
CREATE DATABASE students;
CREATE DATABASE status;
CREATE DATABASE certificates;
CREATE DATABASE notifications;
