"""The portal's pages for people: server-rendered, signed in by the session cookie."""
