"""LLM engines behind one protocol (:class:`pipeline.llm.base.StructuredLLM`): vLLM in process
(:mod:`.vllm_engine`, models located and converted by :mod:`.local_models`), Claude's Messages API
(:mod:`.claude`) and Message Batches API (:mod:`.claude_batch`)."""
