"""One module per architecture, named for its `model_type`; `pretrained.auto` imports them on demand."""
