"""The projection MLP that maps token features into the SCDL embedding space.

Paper symbols: a token feature x (dimension D_x) is mapped to the embedding z = MLP(x) (dimension D); the unit
embedding ẑ = z / ‖z‖ is what every cosine similarity in SCDL uses.
"""
from torch import Tensor, nn

__all__ = ["ProjectionMLP"]


class ProjectionMLP(nn.Module):
    """Per-token MLP ``Linear(D_x→H) → ReLU → Dropout → Linear(H→H) → ReLU → Dropout → Linear(H→D)``.

    It acts on the last dimension, so any leading shape works: ``[..., D_x] → [..., D]``. Dropout is active in train
    mode only, so z is stochastic during training and deterministic in eval mode (as in the released code).

    Args:
        in_channels: D_x, the channel count of the token features.
        embed_dim: D, the embedding dimension (256 in the released code).
        hidden_dim: H, the width of the two hidden layers; ``None`` means 2·D as in the released code.
        dropout: dropout probability after each hidden layer (0.2 in the released code).
    """

    def __init__(self, in_channels: int, embed_dim: int = 256, hidden_dim: int = None, dropout: float = 0.2):
        super().__init__()
        hidden_dim = 2 * embed_dim if hidden_dim is None else hidden_dim
        if min(in_channels, embed_dim, hidden_dim) < 1:
            raise ValueError(f"in_channels, embed_dim and hidden_dim must be positive, got {in_channels}, "
                             f"{embed_dim} and {hidden_dim}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}.")
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.layers = nn.Sequential(
            nn.Linear(in_channels, hidden_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden_dim, embed_dim),
        )

    def forward(self, x: Tensor, deterministic: bool = False) -> Tensor:
        """``x``: [..., D_x] token features → z: [..., D] (not normalised). ``deterministic=True`` skips dropout
        whatever the mode (as in eval mode), e.g. for SAC's anchors, which must not carry dropout noise."""
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"ProjectionMLP expects {self.in_channels} input channels in the last dimension, "
                             f"got shape {tuple(x.shape)}.")
        if not deterministic or not self.training:
            return self.layers(x)
        for layer in self.layers:
            if not isinstance(layer, nn.Dropout):
                x = layer(x)
        return x
