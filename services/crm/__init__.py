"""CRM: the system of record (users, customers, CDRs, audit) and the agent web desktop."""
