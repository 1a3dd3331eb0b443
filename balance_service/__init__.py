"""balance_service: balances, settlements, settle-up plans and reports."""
