"""Money: plans, subscriptions, seat and read entitlements, usage, Stripe webhooks."""
