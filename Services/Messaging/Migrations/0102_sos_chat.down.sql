DROP TABLE chat_messages;
DROP TABLE sos_chat_participants;
DROP TABLE sos_chats;
