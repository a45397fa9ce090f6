"""Fleet dispatch: plan a day's orders across the fleet (issue 14)."""
