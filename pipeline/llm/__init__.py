"""LLM engines behind one protocol (:class:`pipeline.llm.base.StructuredLLM`)."""
