DROP TABLE conversation_audit;
DROP FUNCTION conversation_audit_append_only();
DROP TABLE conversation_messages;
DROP FUNCTION open_conversation(uuid, uuid, uuid);
DROP TABLE conversations;
DROP FUNCTION conversation_actor();
