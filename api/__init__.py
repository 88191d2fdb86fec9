"""The HTTP API for the mobile app, and Twilio's status webhook."""
