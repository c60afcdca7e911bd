"""The Streamlit dashboard (`mixprec dashboard`): app.py plus pure view helpers."""
