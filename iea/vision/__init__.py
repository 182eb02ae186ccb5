"""Sentimental Image Interpreter: SAM regions, region filters, VLM interpretations."""
