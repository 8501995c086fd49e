"""LoRA training: the adapter and its trainer (lora), the callback that reports steps and honours pause
and stop, the collective that shares rank 0's verdict, and running ranks under torchrun/accelerate.
"""
