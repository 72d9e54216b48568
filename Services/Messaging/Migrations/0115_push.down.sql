DROP TABLE push_sends;
DROP TABLE push_devices;
DELETE FROM notification_deliveries WHERE channel = 'push';
