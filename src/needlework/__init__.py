"""needlework: synthetic key-value finetuning and long-context evaluation.

After "From Artificial Needles to Real Haystacks" (Xiong et al., ICLR 2025, arXiv:2406.19292).
"""

__version__ = "0.1.0"
