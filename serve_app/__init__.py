"""gpt-oss on Ray Serve with vLLM replicas and per-request LoRA adapters."""
