"""The TypeScript error-fix batch: reading compiler errors (:mod:`.parsing`), the tables' SQL
(:mod:`.store`), the prompt and output check (:mod:`.prompt`), the batch (:mod:`.batch`) and the
compiler check of suggested fixes (:mod:`.compiler`)."""
