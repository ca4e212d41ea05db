"""Data preparation: convert multi-modality datasets into normalized ``.npy`` slices + a manifest
(:func:`medsam_lite.prep.prep.prep_dataset`), and PyTorch datasets reading them (:mod:`medsam_lite.prep.dataset`).

Submodules are imported on use (``from medsam_lite.prep.prep import prep_dataset``) so that importing the
package pulls in neither torch nor scipy.
"""
