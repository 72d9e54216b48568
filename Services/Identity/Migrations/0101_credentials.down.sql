DROP TABLE professional_documents;
DROP TABLE volunteer_documents;
DROP TABLE professionals;
DROP TABLE certifications;
DROP TABLE volunteers;
