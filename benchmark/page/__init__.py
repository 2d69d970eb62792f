"""The leaderboard page's data: records -> ranked tables (board.py) -> what is shown (tables.py)."""
