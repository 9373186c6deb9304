"""Training/evaluation examples: THE prompt template and the task builders."""

from sidrec.tasks.template import PROMPT_TEMPLATE, TASKS, render_prompt, sid_text, sid_token

__all__ = ["PROMPT_TEMPLATE", "TASKS", "render_prompt", "sid_text", "sid_token"]
