"""Every prompt the interpreter sends, in one place. ``PROMPT_VERSION`` is part of the
interpretation cache key: change it whenever a prompt's text changes."""

PROMPT_VERSION = "interpret-v1"

INTERPRET_REGION = (
    "This image shows one region of a social media photo. Describe what the region shows in one "
    "short sentence, then rate the sentiment it conveys.\n"
    "Answer exactly in this form:\n"
    "Description: <one sentence>\n"
    "Sentiment: <positive, neutral or negative>\n"
    "Score: <a number from -1 (very negative) to 1 (very positive)>"
)
