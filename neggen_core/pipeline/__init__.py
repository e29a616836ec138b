"""The pipeline: the stage specs (`spec`), the table of stages (`stages`), running one with the
single skip decision (`run`), and what is built (`status`)."""
