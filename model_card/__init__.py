"""Model card templates (Jinja2); an installed wheel carries them as the resource package `atom.model_card`."""
