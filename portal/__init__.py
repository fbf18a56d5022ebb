"""The web edge for people: pages and the admin JSON API."""
