"""The embedding stage: model staging on workers, decode-for-model, batched encoding."""
