"""The Postfix policy service: the gateway's recipient, harvest, rate, ban and admission
verdicts for an existing Postfix (`check_policy_service`). See docs/integrated-mode.md."""
