"""`python -m crm` (with services/ and the generated code on PYTHONPATH) runs the CRM."""

from common.service import run
from crm.app import main
from crm.settings import CrmSettings

if __name__ == "__main__":
    run("crm", main, CrmSettings.from_env)
