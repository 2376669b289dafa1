"""``python -m lit_unlearn.methods.interaction.experiment --config <experiment YAML> ...``."""

from lit_unlearn.methods.interaction.experiment.runner import main

main()
