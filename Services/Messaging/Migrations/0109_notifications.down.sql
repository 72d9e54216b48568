DROP TABLE notification_stream_tickets;
DROP TABLE notification_deliveries;
DROP TABLE notifications;
DROP TABLE notification_people;
