"""The leaderboard web page (a Streamlit script, app.py), shipped as a package so it can be found once installed."""
