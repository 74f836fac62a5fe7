"""thinkjepa: VLM-guided JEPA world models.

A dense JEPA world model knows what happens next; a LoRA-finetuned vision-language "thinker" proposes
the next subgoal as a latent in that world model's space; a latent planner drives world-model
rollouts toward each subgoal. See DESIGN.md-style overview in the README.
"""

__version__ = "0.1.0"
