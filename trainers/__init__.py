"""Thin re-export modules for nnU-Net's ``nnUNet_extTrainer`` lookup. Point the variable at this folder:

    export nnUNet_extTrainer=$(nnUNetv2_scdl_trainers_path)

Only re-exports live here: nnU-Net imports these files as top-level modules and evicts them from ``sys.modules``
after the lookup, while the classes themselves stay in ``nnunetv2_scdl.training``.
"""
