"""Everything gpt-oss-specific: chat requests to Harmony tokens and back."""
