"""expense_service: shared expenses of a group, their payers and splits."""
